"""How the extension speaks to people: its texts in the reader's language, numbers, dates and
money in the reader's formats, the notification emails' rendering and the refusal page's words.

- ``i18n``: the translation domain, its catalogs, the locale of a request, and Babel, imported
  here only and lazily (it is an optional dependency);
- ``formats``: numbers, days, moments in a zone and money, per locale;
- ``translator``: ``Translator``, the texts and formats of one locale, and the metrics' words;
- ``emails``: the notification emails rendered from their templates (sending is ``services.mail``).

It sits below the services (the emails are rendered by the mail service) and knows nothing of
them: what it needs of the configuration (the configured locale) it is given.
"""
