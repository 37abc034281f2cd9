"""MoLe-VLA in PyTorch: vision tokens -> projector -> LLaMA layers chosen by STAR -> cognition -> DiT action head.

Modules (import what you need; this package imports nothing heavy on its own):
    configuration  MoLeVLAConfig (+ VisionConfig, LLMConfig, RouterConfig, ActionHeadConfig, LossConfig), presets
    tokenizer      prompt building; byte tokenizer (tiny) and local HF tokenizers (SmolLM2, LLaMA)
    vision         per-view encoders (patch / EfficientNet-Lite0 / DINOv2+SigLIP) and the fused MLP projector
    llm            MoLeLlama: LLaMA decoder layers whose loop runs only the chosen layers
    router         STARRouter and RouterChoice (top-k with straight-through gate, skip modes)
    action_head    DiT action head: diffusion loss, DDIM sampling with CFG
    modeling       MoLeVLA (vision, projector, llm, router, action_head), build_model
    cogkd          EMATeacher and cogkd_loss
    normalization  ActionNormalizer (BOUNDS_Q99)
    checkpoint     save_checkpoint / load_checkpoint (safetensors + JSON)
    processor      ImageProcessor (camera dict -> resized uint8 batch)
    policy         MoLeVLAPolicy (mole_vla_ros.interfaces.Policy)
"""
