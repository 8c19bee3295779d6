"""What the runtime writes and speaks: result files, the live-link protocol messages, previews. torch-free."""
