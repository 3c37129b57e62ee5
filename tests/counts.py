"""Counts that the robustness tests report (crash points, concurrent loads, adversarial cases)."""


def report(request, line: str) -> None:
    """Write ``line`` to pytest's terminal, past its output capture (shown without ``-s``)."""
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)
