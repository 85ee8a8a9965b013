"""The improvement loop: curation and exports, prompt optimisation, fine-tuning and distillation, gated
promotion and canaries."""
