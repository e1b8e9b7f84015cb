"""CelebA preparation (ddpm_helpers.engine.celeba), on a small fake archive laid out like Kaggle's."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm_helpers.engine import celeba
from ddpm_helpers.engine.celeba import crop_box, make_fake_celeba, prepare_celeba


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return make_fake_celeba(tmp_path_factory.mktemp("kaggle") / "archive.zip", count=5)


def read_face(archive_path, number):
    with zipfile.ZipFile(archive_path) as archive:
        name = f"img_align_celeba/img_align_celeba/{number:06d}.jpg"
        with archive.open(name) as file, Image.open(file) as image:
            return image.convert("RGB")


def test_crop_box_is_the_central_square():
    assert crop_box(178, 218) == (0, 20, 178, 198)  # a CelebA face
    assert crop_box(218, 178) == (20, 0, 198, 178)
    assert crop_box(5, 8) == (0, 1, 5, 6)  # odd margins round down, as Keras does
    assert crop_box(32, 32) == (0, 0, 32, 32)


def test_fake_archive_has_kaggles_layout(archive):
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
    assert "img_align_celeba/img_align_celeba/000001.jpg" in names
    assert read_face(archive, 1).size == celeba.CELEBA_SIZE


def test_prepare_from_zip_crops_the_centre_and_resizes(archive, tmp_path):
    summary = prepare_celeba(archive, tmp_path / "out", image_size=32)
    assert (summary["written"], summary["skipped"], summary["total"]) == (5, 0, 5)
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(1, 6)]
    for number in (1, 5):
        with Image.open(tmp_path / "out" / f"{number:06d}.png") as png:
            assert png.size == (32, 32) and png.mode == "RGB"
            got = np.asarray(png)
        face = read_face(archive, number)
        expected = face.crop((0, 20, 178, 198)).resize((32, 32), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(got, np.asarray(expected))
        squashed = np.asarray(face.resize((32, 32), Image.Resampling.BILINEAR))
        assert np.abs(got.astype(int) - squashed).max() > 10  # a crop, not a squash


def test_squash_keeps_the_whole_face_as_the_original_tutorial(archive, tmp_path):
    prepare_celeba(archive, tmp_path / "out", image_size=16, crop="squash", limit=2)
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    with Image.open(tmp_path / "out" / "000002.png") as png:
        got = np.asarray(png)
    face = read_face(archive, 2)
    expected = face.resize((16, 16), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_prepare_from_the_unpacked_folder(tmp_path):
    folder = make_fake_celeba(tmp_path / "unpacked", count=3, as_zip=False)
    summary = prepare_celeba(folder, tmp_path / "out", image_size=8)
    assert summary["written"] == 3
    # The folder itself may be given too (the inner img_align_celeba).
    inner = folder / "img_align_celeba" / "img_align_celeba"
    assert prepare_celeba(inner, tmp_path / "out2", image_size=8)["written"] == 3


def test_prepared_folder_loads_unchanged_for_training(archive, tmp_path):
    from ddpm_helpers.engine.data import load_data

    prepare_celeba(archive, tmp_path / "out", image_size=32)
    source = load_data(f"folder:{tmp_path / 'out'}", image_size=32, channels=3)
    assert source.count == 5 and source.image_shape == (32, 32, 3)
    loaded = source.take(5)
    with Image.open(tmp_path / "out" / "000003.png") as png:
        pixels = np.asarray(png, dtype=np.float32)
    np.testing.assert_allclose(loaded[2], pixels / 127.5 - 1.0, atol=1e-6)


def test_second_run_resumes_and_other_settings_are_refused(archive, tmp_path):
    out = tmp_path / "out"
    prepare_celeba(archive, out, image_size=32, limit=2)
    summary = prepare_celeba(archive, out, image_size=32)
    assert (summary["written"], summary["skipped"]) == (3, 2)
    with pytest.raises(ValueError, match="prepared with .*choose another output folder"):
        prepare_celeba(archive, out, image_size=16)


def test_bad_sources_name_the_problem_and_the_layout(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*img_align_celeba/img_align_celeba"):
        prepare_celeba(tmp_path / "missing.zip", tmp_path / "out")
    not_zip = tmp_path / "archive.zip"
    not_zip.write_text("an HTML error page instead of the archive")
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        prepare_celeba(not_zip, tmp_path / "out")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("photos/000001.jpg", b"")
    with pytest.raises(ValueError, match="no images under a folder named 'img_align_celeba'"):
        prepare_celeba(other, tmp_path / "out")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("img_align_celeba/img_align_celeba/000001.jpg", b"not a jpeg")
    with pytest.raises(ValueError, match="Cannot read .*000001.jpg.*download it again"):
        prepare_celeba(broken, tmp_path / "out", strict=True)
    with pytest.raises(ValueError, match="Unknown crop"):
        prepare_celeba(broken, tmp_path / "out", crop="left")


def test_command_line(archive, tmp_path, capsys):
    assert celeba.main([str(archive), str(tmp_path / "out"), "--size", "8"]) == 0
    assert f"--data folder:{tmp_path / 'out'}" in capsys.readouterr().out
    assert celeba.main([str(tmp_path / "nothing.zip"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_damaged_faces_are_skipped_and_listed_unless_strict(archive, tmp_path, capsys):
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(damaged, "w") as target:
        for name in source.namelist():
            payload = source.read(name)
            target.writestr(name, payload[:40] if name.endswith("000002.jpg") else payload)
    summary = prepare_celeba(damaged, tmp_path / "out", image_size=8)
    assert [Path(n).name for n in summary["damaged"]] == ["000002.jpg"]
    assert summary["written"] == summary["total"] - 1
    assert not (tmp_path / "out" / "000002.png").exists()
    assert celeba.main([str(damaged), str(tmp_path / "cli"), "--size", "8"]) == 0
    assert "1 damaged file(s) skipped: img_align_celeba/img_align_celeba/000002.jpg" in capsys.readouterr().err
    assert celeba.main([str(damaged), str(tmp_path / "strict"), "--size", "8", "--strict"]) == 2
    assert "Cannot read" in capsys.readouterr().err


def test_negative_limit_is_refused(archive, tmp_path, capsys):
    with pytest.raises(ValueError, match="--limit must be a number of faces, at least 1, got -5"):
        prepare_celeba(archive, tmp_path / "out", limit=-5)
    assert celeba.main([str(archive), str(tmp_path / "o"), "--limit", "-5"]) == 2
    assert "got -5" in capsys.readouterr().err


def test_ctrl_c_prints_one_line_saying_what_was_written(archive, tmp_path, capsys, monkeypatch):
    calls = []
    original = celeba.crop_and_resize

    def interrupt_at_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(celeba, "crop_and_resize", interrupt_at_third)
    out = tmp_path / "out"
    assert celeba.main([str(archive), str(out), "--size", "8"]) == 130
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith("Interrupted: 2 of ") and "run the same command again" in lines[0]
    assert len(list(out.glob("*.png"))) == 2
    monkeypatch.setattr(celeba, "crop_and_resize", original)
    summary = prepare_celeba(archive, out, image_size=8)  # continues
    assert summary["skipped"] == 2 and summary["written"] == summary["total"] - 2


def test_prepare_celeba_subcommand_of_the_package(archive, tmp_path, capsys):
    from ddpm_helpers import cli

    assert cli.main(["prepare-celeba", str(archive), str(tmp_path / "celeba32"), "--size", "8",
                     "--limit", "3"]) == 0
    assert len(list((tmp_path / "celeba32").glob("*.png"))) == 3
    assert f"--data folder:{tmp_path / 'celeba32'}" in capsys.readouterr().out
    assert cli.main(["prepare-celeba", str(archive), str(tmp_path / "x"), "--limit", "-5"]) == 2


def test_celeba_profile_reads_where_the_recipe_writes_and_seed_is_its_alias():
    from ddpm_helpers import cli
    from ddpm_helpers.profiles import CELEBA_FOLDER, PROFILES, get_profile

    assert get_profile("seed") is PROFILES["celeba"] is PROFILES["seed"]
    assert get_profile("seed").name == "celeba" and list(PROFILES) == ["smoke", "default", "celeba"]
    assert PROFILES["celeba"].dataset == f"folder:{CELEBA_FOLDER}" == "folder:data/celeba32"
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "prepare-celeba" in help_text and "data/celeba32" in help_text
