"""Measuring: the book's offline metric (:mod:`.metrics`, :mod:`.frechet`, :mod:`.classifier`),
intervals and paired tests (:mod:`.intervals`), the guidance trade-off (:mod:`.guidance`) and the
U-Net's cost bookkeeping (:mod:`.unet_costs`).
"""
