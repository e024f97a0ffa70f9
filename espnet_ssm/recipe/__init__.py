"""Python helpers behind the stage scripts of ``egs2/*/asr1`` (data preparation, the synthetic
demo corpus, tokens, scoring, RESULTS.md, real-time factor, job backend, model card).

The shell stages run them through ``pyscripts/helper.py``, which skips the encoder registration
done by ``import espnet_ssm`` (that imports all of ``espnet2.tasks.asr``, about 15 s): none of
these helpers builds a model.
"""
