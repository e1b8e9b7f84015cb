"""Reading benchmark records: the XLA verdict the chapters "Training" and "Scaling up" print."""

from __future__ import annotations

import pytest

from ddpm_helpers.notebook import bench_results


def _record(speeds: dict, rounds: tuple = (0.010, 0.011)) -> dict:
    """A cpu_options record: speeds[(threads, batch)] = (images/s without XLA, with XLA)."""
    table = [{"threads": t, "batch": b, "xla": xla, "images_per_second": v[xla]}
             for (t, b), v in speeds.items() for xla in (False, True)]
    details = {str(t): {str(b): {"variants": {name: {"seconds_per_step_rounds": list(rounds)}
                                             for name in ("package", "package_xla")}}}
               for t, b in speeds}
    return {"table": table, "details": details, "file": "cpu_options-test.json"}


def test_ratios_are_with_xla_over_without_and_can_be_limited_to_one_batch():
    record = _record({(1, 64): (100.0, 80.0), (2, 64): (100.0, 90.0), (1, 128): (100.0, 150.0)})
    assert bench_results.xla_ratios(record) == pytest.approx({(1, 64): 0.8, (2, 64): 0.9, (1, 128): 1.5})
    assert bench_results.xla_ratios(record, 64) == pytest.approx({(1, 64): 0.8, (2, 64): 0.9})


@pytest.mark.parametrize("speeds, verdict", [
    ({(1, 64): (100.0, 80.0), (2, 64): (100.0, 70.0)}, "slowed down every setting"),
    ({(1, 64): (100.0, 130.0), (2, 64): (100.0, 125.0)}, "helped in every setting"),
    ({(1, 64): (100.0, 130.0), (2, 64): (100.0, 70.0)}, "helped in one of the two settings and slowed down one"),
    ({(1, 64): (100.0, 105.0), (2, 64): (100.0, 97.0)},
     "changed the speed by less than the spread between its rounds (not resolved) in every setting"),
    ({(1, 64): (100.0, 130.0), (2, 64): (100.0, 95.0), (4, 64): (100.0, 50.0)},
     "helped in one of the three settings, slowed down one, and changed the speed by less than the spread"
     " between its rounds in the remaining one (not resolved)"),
    ({(1, 64): (100.0, 95.0), (4, 64): (100.0, 50.0), (8, 64): (100.0, 99.0)},
     "slowed down one of the three settings and changed the speed by less than the spread between its rounds"
     " in the remaining two (not resolved)"),
])
def test_the_verdict_follows_the_ratios_and_the_noise(speeds, verdict):
    # rounds 10 and 11 ms: a spread of 1.1, so ratios within [1/1.1, 1.1] are noise
    assert verdict in bench_results.xla_verdict(_record(speeds))


def test_each_setting_is_judged_against_its_own_rounds():
    record = _record({(1, 64): (100.0, 87.0), (2, 64): (100.0, 104.0)})
    # the first setting's rounds agree within 3%: 0.87 is a slowdown; the second's differ by 40%
    record["details"]["1"]["64"]["variants"]["package"]["seconds_per_step_rounds"] = [0.010, 0.0103]
    record["details"]["1"]["64"]["variants"]["package_xla"]["seconds_per_step_rounds"] = [0.012, 0.0122]
    record["details"]["2"]["64"]["variants"]["package"]["seconds_per_step_rounds"] = [0.010, 0.014]
    assert bench_results.xla_noise(record, 1, 64) == pytest.approx(1.03)
    assert bench_results.xla_verdict(record, 64) == (
        "slowed down one of the two settings and changed the speed by less than the spread between its rounds"
        " in the remaining one (not resolved)")


def test_a_record_without_the_batch_is_named():
    with pytest.raises(ValueError, match="cpu_options-test.json has no setting .* at batch 32"):
        bench_results.xla_verdict(_record({(1, 64): (100.0, 80.0)}), 32)
