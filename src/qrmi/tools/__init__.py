"""Command-line tools shared by ``qrmi run`` and the reference-compatible ``task_runner``.

* :mod:`qrmi.tools.inputs` reads task input files into :class:`~qrmi.models.Payload` objects.
* :mod:`qrmi.tools.runner` starts a task, waits for it with adaptive polling, cancels it on
  Ctrl-C or SIGTERM, and maps the outcome to an exit code.
* :mod:`qrmi.tools.task_runner.main` is the ``task_runner NAME INPUT [OUTPUT]`` command.
"""
