"""Builds the Cython extensions of the media hot path; everything else is in pyproject.toml.

``rtp.py``, ``jitter.py``, ``stream.py`` and ``clock.py`` in ``parley.media`` stay plain Python;
Cython compiles them as they are, typed by the ``.pxd`` files beside them, so every RTP packet
and every 20 ms tick runs as C (see the docstring of ``parley.media.stream``). If no C compiler
is found the build goes on and the same modules run interpreted, several times slower.
``datagram_c.pyx`` (the sockets read once per tick; hand-written Cython, as it calls recvmmsg and
epoll directly) falls back the same way, to ``parley.media.datagram``.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

HOT_PATH = ["rtp", "jitter", "stream", "clock"]

setup(
    ext_modules=cythonize(
        [
            Extension(f"parley.media.{name}", [f"src/parley/media/{name}.py"], optional=True)
            for name in HOT_PATH
        ]
        + [
            Extension("parley.media.datagram_c", ["src/parley/media/datagram_c.pyx"], optional=True),
            Extension("parley.loadtest.listen", ["src/parley/loadtest/listen.py"], optional=True),
        ],
        compiler_directives={
            "language_level": 3,
            "annotation_typing": False,  # types come from the .pxd files only: Python semantics stay
            "boundscheck": False,
            "wraparound": False,
        },
        include_path=["src"],
        build_dir="build/cython",  # the generated C stays out of the source tree
    ),
)
