"""The language models: the frozen text backbone (resolved by name, folder or hub id; the embedded default;
SmolLM2 from GGUF; LoRA) in `backbone`, and LLaMA 3.2 Vision with LoRA in `mllama`."""
