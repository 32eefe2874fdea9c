"""Transfer Learning Studio: teach a pretrained image model your own pictures.

``engine/`` is the UI-free core (data, training, evaluation, bundles, exports); ``app/`` is the web
page (Gradio) and the only part that imports gradio; ``cli.py`` is the command line and
``settings.py`` reads every setting from the environment. Neither the engine nor the command line
imports the app (tests/test_boundaries.py checks it).
"""

__version__ = "0.1.0"
