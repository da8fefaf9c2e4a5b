"""GGUF models run by llama.cpp for LMQL 0.7.3, in-process or over LMTP (``lpb serve``).

Importing this package loads nothing and registers nothing; import the module you need:

* ``model_files``: which GGUF a model name means (``smollm2``, the embedded SmolLM2, or a path), and its
  content fingerprint;
* ``gguf_tokenizer``: the GGUF's tokenizer for LMQL, rebuilt with ``tokenizers`` and cached on disk,
  by ``gguf_build`` from ``gguf_vocab`` (the GGUF's tokenizer metadata) with ``gguf_spm``
  (SentencePiece GGUFs) or ``gguf_bpe`` (byte-level BPE GGUFs and their pre-tokenizers, Gemma 4);
* ``chat``: one-turn chat prompts in the GGUF's own chat template;
* ``engine``: the llama.cpp worker thread that generates and scores under LMQL's token masks;
* ``lmql_model``: ``load_model()``, an ``lmql.LLM`` running the engine in-process;
* ``lmql_patches``: a result-identical speed-up of LMQL's constraint evaluation;
* ``lmtp_backend``, ``lmtp_server``: the engine behind LMQL's LMTP protocol, and the server;
* ``lmtp_client``: ``remote_model()``, an ``lmql.LLM`` querying such a server.
"""
