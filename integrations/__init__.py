"""Opt-in integrations (installed as ``torch_flashinfer.integrations``); nothing is patched at import."""
