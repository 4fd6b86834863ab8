"""Istio's bookinfo sample as four small stdlib apps with the original HTTP APIs.

``productpage`` (the HTML page, login/logout, the JSON API), ``details``,
``reviews`` (v1 no stars, v2 black stars, v3 red stars: chosen by the
``ENABLE_RATINGS`` and ``STAR_COLOR`` variables the catalogue sets per image,
as the original images' Dockerfiles do) and ``ratings``. Run one with
``python -m meshwork.examples.bookinfo.<app> [PORT]`` (default 9080).
"""
