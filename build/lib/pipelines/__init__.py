"""The Ray side of MSSR: data preparation (Ray Data), the training loop (Ray Train), the
memory-strength actor, MLflow tracking and the ``mssr`` command line."""
