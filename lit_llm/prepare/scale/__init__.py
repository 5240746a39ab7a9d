"""The data pipeline on datatrove's executors (local, Slurm, Ray): the same steps as `lit_llm.prepare.run`,
as datatrove pipeline blocks, run as five chained stages (process, buckets, plan, tokenize, finalize).

datatrove and ray are optional (`pip install 'lit_llm[scale]'`); nothing here imports them until a run asks for
an executor. `lit_llm.prepare.run.prepare` hands a config with an `executor:` block to `launch.run_on_executor`.
"""
