"""The traced pass: one forward pass with hidden states (trace), the one decoding loop (decoding),
and the one cache both keep their results in (cache)."""
