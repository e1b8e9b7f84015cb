"""The method a reader studies, written to read like the papers: noise schedules
(:mod:`.schedules`), the forward process, its posterior and the loss (:mod:`.diffusion`), the
reverse steps of DDPM and DDIM (:mod:`.samplers`) and the noise predictors they call, guidance
included (:mod:`.predictors`), the U-Net (:mod:`.unet_layers`, :mod:`.unet`), and the Gaussian
facts of chapter "Background" (:mod:`.gaussians`). Imports nothing of the package above it.
"""
