"""Parallelism and checkpointing seams of the trainer.

`parallelize(model, recipe)` is the one place a model is wrapped for training (activation
checkpointing now; tensor parallel, compile and FSDP2 when the distributed issue lands), and
`checkpoint` is the one module that writes and reads training state and HF exports.
"""
