"""What the commands run, end to end: train a model of each kind (`recipes`), the FLOP-matched comparison
(`compare`) and finetuning on task examples (`finetune`)."""
