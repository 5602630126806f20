"""Recurrent layers (placeholder until the decomposed rule lands): handled by the fallback."""
