"""Matched real/AI image datasets and a fast fastai experiment loop for AI-generated image detection

Modules:

- `aidetect.all`: `from aidetect.all import *`: the one-line entrance to the library, as `from fastai.vision.all import *` is to fastai's.
- `aidetect.app`: `aidetect app`: a Gradio app that answers P(AI), shows where the detector looked (Grad-CAM) and which model answered, for one or several safely loaded detectors.
- `aidetect.audit`: Could a model that never looks at generation tell real from AI in a dataset? File properties and pixel statistics per class, a per-pair encoder check, and group-fold classifiers with bootstrap intervals.
- `aidetect.augment`: The training recipes' random steps (blur, grayscale, JPEG, invisible watermark) and what each recipe applies to an image in training.
- `aidetect.cli`: The command line: `aidetect audit`, `train`, `eval`, `robustness`, `predict`, `explain`, `app`, `prepare` and `demo`.
- `aidetect.core`: Errors, argument checks, files and folders: the small helpers every other part of aidetect uses.
- `aidetect.dataset`: One home for what a dataset is: its layout, its `manifest.csv` and `rejected.csv`, writing them durably, verifying, merging per-process parts, and loading several datasets for training.
- `aidetect.decode`: libjpeg-turbo at the scale a model needs on the CPU; batches decoded by nvJPEG on the GPU.
- `aidetect.demo`: Real photos from scikit-image's samples, tiny random-weight image variations, a ResNet34 trained from scratch, and a cross-domain evaluation: `aidetect demo`.
- `aidetect.evaluate`: Run a detector over test datasets; one tidy table of metrics (AI is the positive class), per-category breakdowns, confusion matrices, the most confident mistakes, an interactive widget, and train × test transfer tables.
- `aidetect.explain`: Grad-CAM heatmaps for the AI class at any layer (pytorch-grad-cam), overlays, galleries of an evaluation's most confident mistakes and hits, and `aidetect explain`.
- `aidetect.gen.backends`: Workers that turn a batch of source photos into AI counterparts: Stable Diffusion image variations with diffusers, and OpenAI's images API.
- `aidetect.gen.cli`: The command line of the generator: `fetch` real photos, make `variations` of them (one generator or several), `import` variations made elsewhere, list the `generators`, split a dataset `per-generator`.
- `aidetect.gen.fetch`: A registry of public datasets (Indoor Scene Recognition, Weather Image Recognition, Comic Books; and GenImage-tiny, CIFAKE and Synthbuster, which hold AI images already), fetched with the Kaggle API or from a downloaded archive and laid out for `aidetect-gen variations` or as aidetect datasets.
- `aidetect.gen.importer`: DALL·E 2 images downloaded by hand, or any other generator's output: pair each with its source photo by file name and make an aidetect dataset.
- `aidetect.gen.pipeline`: Loading Stable Diffusion image-variation pipelines with `from_pretrained`: Hub ids, local folders, and random-weight presets of the same classes for offline work.
- `aidetect.gen.plan`: Which photos a run uses and, deterministically, what each becomes: its seeds, its variants' paths, and the batches they are generated in.
- `aidetect.gen.run`: Plan, read ahead, generate batch by batch with safety retries, write: resumable after any crash, shardable across processes.
- `aidetect.gen.sizing`: One home for the size policy: what size a group of images is stored at, and what each image goes through to get there.
- `aidetect.gen.zoo.flux`: The zoo's FLUX.1 Redux generator: backend, random-weight presets, registration.
- `aidetect.gen.zoo.identity`: A perfect null generator: the photo's own pixels, treated as a generated image, to measure what the dataset pipeline alone leaks.
- `aidetect.gen.zoo.img2img`: The zoo's img2img generators: backend, random-weight presets, registration.
- `aidetect.gen.zoo.ipadapter`: The zoo's IP-Adapter generators: backend, random-weight presets, registration.
- `aidetect.gen.zoo.kandinsky`: The zoo's Kandinsky 2.2 generator: backend, random-weight presets, registration.
- `aidetect.gen.zoo.load`: Open image-conditioned generators, each fed the way its card or pipeline says: matched counterparts of the same photos from many models.
- `aidetect.gen.zoo.parts`: The classes the zoo's real checkpoints use, built with random weights: CLIP encoders, VAEs, UNets, schedulers, a tokenizer that needs no file.
- `aidetect.gen.zoo.presets`: Where each generator's weights come from: the Hub, a local folder, or a random-weight preset built once into the cache.
- `aidetect.gen.zoo.recon`: The zoo's Reconstructions generators: backend, random-weight presets, registration.
- `aidetect.gen.zoo.registry`: What a zoo generator is (`ZooEntry`), what its backends share (`ZooBackend`), and the list they are registered in.
- `aidetect.gen.zoo.unclip`: The zoo's SD 2.1 unCLIP generator: backend, random-weight presets, registration.
- `aidetect.hf`: What 🤗 `datasets` and the Hub read: a dataset folder's image-folder metadata and card, a detector's model card and results card, Hub model ids, downloads and uploads.
- `aidetect.hub`: A dataset folder as a 🤗 `datasets.DatasetDict`, its card rewritten with the registry's licences, and datasets and detectors pushed to the Hub.
- `aidetect.images`: Open anything a photo folder can hold as RGB, or say exactly why not; save a variation the way its source was saved.
- `aidetect.metrics`: How good is a P(AI): sklearn's metrics with AI as the positive class, calibration, intervals by source group, and the threshold a model picks on its validation split.
- `aidetect.model`: What a detector is at inference: its architecture by name, the transform that turns one image into its input, and the normalisation.
- `aidetect.pixels`: Cheap, documented per-image statistics of the pixels that a processing pipeline leaves behind: the noise residual's spectrum, resampling periodicity, JPEG quantisation and double compression, the 8×8 block grid and sharpness.
- `aidetect.plots`: The house style of every aidetect figure: fonts, spines, a colour-blind-safe cycle, atomic saving as PNG, PDF or SVG, and the few helpers the figures share.
- `aidetect.prepare`: A dataset whose images are shrunk once (shorter side S, antialiased, saved like their source), with a manifest that points back to the original rows: for many experiments on big photos.
- `aidetect.process`: Which process this is among those `accelerate launch` starts (one per GPU), and its share of the work.
- `aidetect.robustness`: Re-test a detector on recompressed, resized, blurred, noisy, cropped, grayscale and "shared" copies of its test sets, and under white-box FGSM/PGD attacks: one tidy table (dataset × perturbation × level), plots and a report.
- `aidetect.script`: Both CLIs, `aidetect` and `aidetect-gen`, are sub-commands built from functions' signatures with fastcore: a flag is written once, beside the parameter it sets.
- `aidetect.sequence`: Train on domain after domain, each detector starting from the last one; evaluate every step on every domain and see transfer grow: one command to train the sequence, one to draw the study's heatmaps.
- `aidetect.tracking`: `aidetect train --log tensorboard|wandb|mlflow|csv`: fastai's own logging callbacks (MLflow's tracking API where fastai has none), one folder per run.
- `aidetect.verify`: Every problem of a dataset's `manifest.csv`, its files' included, and a repair from the files that keeps every backup and every removed row."""

__version__ = "0.1.0"
