"""jaxssl: self-supervised learning in JAX/Flax."""
