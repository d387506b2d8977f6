"""kvq inside inference engines.

- ``kvq.integrations.transformers``: Hugging Face transformers (5.x): ``KvqCache``, an int8 paged KV
  cache for ``generate()``, and the ``"kvq"`` attention function registered in
  ``transformers.AttentionInterface``. Importing it needs neither torch nor transformers; using it
  needs both (a clear ImportError says what is missing).

vLLM and SGLang are covered on paper in docs/integrations.md.
"""
