"""What a chapter calls to show things, in the book and in Colab: glue, shown source and progress
bars (:mod:`.pages`), folded checks (:mod:`.checks`), figures (:mod:`.plotting`), animations
(:mod:`.animation`) and the benchmark records the appendix reads (:mod:`.bench_results`).
"""
