"""Code tasks: LiveCodeBench (out-of-distribution check of the paper), scored in harness.sandbox."""
