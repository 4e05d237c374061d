"""Inference helpers behind ``kglfr search`` (ranking, gallery feature caches)."""
