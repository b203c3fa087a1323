"""Shared by the unit and integration tests of langchain-sac."""


def pytest_configure(config):
    # peft calls a transformers API deprecated in 5.x; not ours to fix, and it drowns real warnings.
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
