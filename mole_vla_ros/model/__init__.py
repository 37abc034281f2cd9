"""MoLe-VLA in PyTorch: vision tokens -> projector -> LLaMA layers chosen by STAR -> cognition -> DiT action head."""
