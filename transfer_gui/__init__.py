"""Transfer Learning Studio: teach a pretrained image model your own pictures.

The engine modules (catalog, weights, data, archive, config, training, evaluation, inference,
bundle, cli) never import gradio; the UI modules (session, handlers, ui) are the only ones that do.
"""

__version__ = "0.1.0"
