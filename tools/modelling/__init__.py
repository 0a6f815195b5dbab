"""Model work: fine-tuning, quantizing, evaluating and building bundles (training extras)."""
