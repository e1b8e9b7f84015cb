"""The engineering that runs the method: data (:mod:`.data`, :mod:`.image_folders`,
:mod:`.celeba`) and ``tf.data`` pipelines (:mod:`.pipeline`); the compiled training step
(:mod:`.train_step`), precision (:mod:`.precision`) and ``tf.distribute`` (:mod:`.distribute`);
learning rates and the EMA (:mod:`.learning_rates`); checkpoints, run folders, their lock and
interruption (:mod:`.checkpoints`, :mod:`.runs`, :mod:`.interrupts`); the training loop
(:mod:`.training`, :mod:`.trained_run`); compiled, chunked sampling (:mod:`.compiled_loops`,
:mod:`.sampling`) and sample files (:mod:`.sample_files`).
"""
