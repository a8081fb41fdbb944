"""GPQA-Diamond: a multiple-choice, non-math task read from a user-supplied file (the hub copy is gated)."""
