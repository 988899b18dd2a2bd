"""The profile page: a face of the extension, server-rendered, that works without JavaScript.

It calls the services the JSON API calls and presents their answers through ``presenters`` and
``page.model``, so the page never shows another number than the API or a guard would.
"""
