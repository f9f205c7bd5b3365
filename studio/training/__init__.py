"""Training: one QLoRA run in a child process (trainer), its run-folder records (recorder, curves),
where LoRA goes (targets), how much memory it needs (memory) and what its curves say (advisor)."""
