"""One progress bar that reads right live in JupyterLab (a widget), in an executed notebook and in a terminal.

``tqdm.auto`` shows a widget in a notebook kernel. A notebook executed without a browser (papermill,
nbval) stores only the text form the widget had when it was first displayed, ``0%| | 0/80``: the
widget's later updates are messages to a browser, not outputs. Here the widget is displayed with a
display id and displayed again when the bar closes, so the executed notebook stores the final bar
(``100%|██████████| 80/80 [...]``) and a browser keeps showing the same, finished widget.
Outside a notebook kernel (or without ipywidgets) this is ``tqdm.auto``'s text bar, unchanged.
"""

from tqdm.auto import tqdm


def progress_bar(iterable, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``, whose notebook widget leaves its final state in the outputs."""
    from tqdm.notebook import tqdm as notebook_tqdm

    if kwargs.get("disable") or not issubclass(tqdm, notebook_tqdm):
        return tqdm(iterable, **kwargs)
    return _RedisplayedNotebookBar(iterable, **kwargs)


class _RedisplayedNotebookBar(tqdm):
    def __init__(self, *args, **kwargs):
        from IPython.display import display

        super().__init__(*args, display=False, **kwargs)
        self._display_handle = display(self.container, display_id=True)
        self.displayed = True

    def close(self):
        already_closed = self.disable
        super().close()
        if not already_closed:
            self._display_handle.update(self.container)
