"""Translations between the Inkweld API and Atelier's own contracts, both ways. Pure: no I/O.

Every rule an Inkweld caller can observe lives here, one module a concern (docs/inkweld.md lists
them): provider names (`providers`), sizes and aspect ratios (`sizes`), profile fields
(`profiles`), project keys (`projects`), the generate request and answer (`generation`), features
and status (`features`), the audit and its statistics (`audits`), media file names (`media`).
Nothing here decides what Atelier allows: a translated request is validated by the same code as a
native one.
"""
