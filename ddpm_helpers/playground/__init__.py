"""The 2-D playground of chapter "Diffusion in two dimensions": toy data (:mod:`.toy_data`), the
MLP denoiser (:mod:`.toy2d`), its training (:mod:`.toy_training`) and exact scores
(:mod:`.toy_score`).
"""
