"""Training: the shared loop (`loop.py`), configs, distributed set-up, pretraining and fine-tuning."""
