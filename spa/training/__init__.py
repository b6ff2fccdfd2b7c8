"""Fine-tuning a pruned ONNX model by distillation from the dense one (`spa finetune`):
data sources (data, data_free), losses by output kind (losses), the loop (distill) and resumable
state (checkpoint)."""
