"""Matched real/AI image datasets and a fast fastai experiment loop for AI-generated image detection

Modules:

- `aidetect.app`: `aidetect app`: a Gradio app that answers P(AI), shows where the detector looked (Grad-CAM) and which model answered, for one or several safely loaded detectors.
- `aidetect.demo`: Real photos from scikit-image's samples, tiny random-weight image variations, a ResNet34 trained from scratch, and a cross-domain evaluation: `aidetect demo`.
- `aidetect.detector`: Load a detector from its safe `.safetensors` + `.json` pair (no pickle), and predict P(AI) for image files, streamed in batches.
- `aidetect.evaluate`: Run a detector over test datasets; one tidy table of metrics (AI is the positive class), per-category breakdowns, confusion matrices, the most confident mistakes, an interactive widget, and train × test transfer tables.
- `aidetect.explain`: Grad-CAM heatmaps for the AI class at any layer (pytorch-grad-cam), overlays, galleries of an evaluation's most confident mistakes and hits, and `aidetect explain`.
- `aidetect.gen.fetch`: A registry of Kaggle datasets (Indoor Scene Recognition, Weather Image Recognition, Comic Books, and two that already hold AI images: GenImage-tiny and CIFAKE), fetched with the Kaggle API or from a downloaded zip and laid out the way `aidetect-gen variations` reads them.
- `aidetect.robustness`: Re-test a detector on recompressed, resized, blurred, noisy, cropped, grayscale and "shared" copies of its test sets, and under white-box FGSM/PGD attacks: one tidy table (dataset × perturbation × level), plots and a report.
- `aidetect.train`: One line from a dataset folder to a trained fastai `Learner`: DataBlock over manifest rows, split by group, `vision_learner`, `lr_find`, `fine_tune`, and a safe export."""

__version__ = "0.1.0"
