"""GGUF models run by llama.cpp for LMQL 0.7.3, in-process or over LMTP (``lpb serve``).

Importing this package loads nothing and registers nothing (it only puts ``OMP_WAIT_POLICY=PASSIVE``
into the environment unless set, so that llama.cpp's OpenMP threads, once loaded, sleep instead of
spinning: see ``cpu``); import the module you need:

* ``model_files``: which GGUF a model name means (``smollm2``, the embedded SmolLM2, or a path), and its
  content fingerprint;
* ``gguf_tokenizer``: the GGUF's tokenizer for LMQL, rebuilt with ``tokenizers`` and cached on disk,
  by ``gguf_build`` from ``gguf_vocab`` (the GGUF's tokenizer metadata) with ``gguf_spm``
  (SentencePiece GGUFs) or ``gguf_bpe`` (byte-level BPE GGUFs and their pre-tokenizers, Gemma 4);
* ``chat``: one-turn chat prompts in the GGUF's own chat template;
* ``engine``: the llama.cpp worker thread that decodes concurrent requests together under LMQL's token
  masks, with ``llama_context`` (the multi-sequence context), ``batch`` (one decode call),
  ``kv_cache`` (what each sequence holds) and ``sampling`` (choosing a token);
* ``cpu``: thread counts and OpenMP settings for sharing the CPU;
* ``lmql_model``: ``load_model()``, an ``lmql.LLM`` running the engine in-process;
* ``lmql_patches``: a result-identical speed-up of LMQL's constraint evaluation;
* ``lmtp_backend``, ``lmtp_server``: the engine behind LMQL's LMTP protocol, and the server;
* ``lmtp_client``: ``remote_model()``, an ``lmql.LLM`` querying such a server.
"""

from lpb_plugins.llama_cpp.cpu import quiet_openmp

quiet_openmp()
