"""LLaMA Day Care: PromptBreeder on LMQL, extended through pluggy plugins."""

__version__ = "0.1.0"
