"""The order of the gallery: from what the learning rate does to how to embed etakit."""

ORDER = ["plot_learning_rate.py", "plot_schedules.py", "plot_lr_find.py", "plot_lr_free.py", "plot_adaptive.py",
         "plot_low_precision.py", "plot_embedding.py"]


class Order:
    """sphinx-gallery's ``within_subsection_order``: a key on the file name (unlisted files last)."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        return (ORDER.index(filename) if filename in ORDER else len(ORDER), filename)
