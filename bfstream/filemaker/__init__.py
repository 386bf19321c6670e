"""FileMaker Server as an app's back end: backend tools run as scripts named after the tool, and
lifecycle events run the app's events script, through the FileMaker Data API (docs/filemaker.md).

``wire`` holds the Data API's requests and answers without I/O, ``client`` the sessions and calls,
``target`` the checks of a target's settings that ``bfstream apps update --filemaker`` runs.
"""
