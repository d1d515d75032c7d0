"""aidetect-gen's entry point for `accelerate launch -m data_gen ...`; the generator lives in `aidetect.gen`."""
from aidetect.gen.cli import main
