"""The page's longer texts: what a first-time visitor reads."""

__all__ = ["INTRO", "DEMO_BUTTON", "EXPLAINER", "CURVE_INTRO", "COMPARE_INTRO", "SORT_INTRO"]

INTRO = """# Transfer Learning Studio
Teach a computer to recognise **your own pictures** in three steps: give it a few labelled images,
let it learn (you can watch), then try it on new pictures. It starts from a model that has already
seen millions of photos, so a few dozen images per class are enough."""
DEMO_BUTTON = "See it learn in seconds: train on the example pictures, then see how well it does"

EXPLAINER = """**Pretrained layers.** The model has already learned, from millions of photos, to see edges,
textures, shapes and object parts. Those layers turn any picture into a list of numbers (*features*)
that describe what is in it.

**A new head.** The last layer, which named the 1000 ImageNet things, is replaced by a small new one
with one output per class of yours. *Quick* trains only this head on the features: seconds, and
little data needed, because the hard part (seeing) is already done.

**Fine-tuning.** *Fine-tune* then also nudges the pretrained layers, slowly, towards your pictures:
minutes. It is kept only when it gets more held-out pictures right than Quick does; with few
pictures per class it often does not, and the app tells you so.

**How it is checked.** Quick splits your images into up to 5 groups and trains 5 times, each time
judging the group it left out; so every picture is judged by a model that never saw it, and the
final model then learns from all of them. The accuracy range shown is a 95 % Wilson score interval.

**Why it works with so few images:** press *Compare with training from scratch* below to train the
same model from random weights too, and watch both learn on one plot."""

CURVE_INTRO = ("**Would more images help?** Train Quick on 25 %, 50 %, 75 % and all of your training images and "
               "see how accuracy grows (about 5 Quick trainings).")

COMPARE_INTRO = ("**Why does it work with so few images?** Train the same model twice on your images: once "
                 "starting from what it learned on millions of images, once from random weights (about 30 seconds "
                 "on a laptop), and watch both learn.")

SORT_INTRO = ("**Sort a pile of unsorted pictures.** Label a few per class in step 1 and train (Quick is enough). "
              "Then upload the pile here: the model suggests a class for every picture and asks about the one it "
              "is least sure of first. Say yes, pick the right class, or skip. Every 10 answers it learns from "
              "them and suggests again. Take the sorted pictures away as a zip, one folder per class.")
