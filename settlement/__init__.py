"""Settlement: two parties agree on a payment amount, in real time, with a verifiable record."""
