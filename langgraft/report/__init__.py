"""`langgraft report`: one page for a training run: loss per stage and per category against
tokens, learning rate, held-out bits per character before -> after (the forgetting picture),
tokenizer compression, multiple-choice accuracy with standard errors, sample generations, the
timeline, the resolved recipe and the data manifests. report.md + PNGs, and report.html with the
images inline (one file to send). Nothing is fetched from the network.

    langgraft report out/demo/run-dir                     # training curves only
    langgraft report runs/7b --baseline eval/llama-2-7b --eval trained=eval/7b-zh
    langgraft report runs/7b --baseline llama-2-7b-hf     # a model: evaluated on the run's
                                                          # held-out data, with the final export

Modules: `inputs` (read the run and evaluation directories), `evaluate` (write an evaluation
directory for a model), `plots` (matplotlib), `document` (markdown and HTML), `build`
(assembles the sections), `cli`.
"""
