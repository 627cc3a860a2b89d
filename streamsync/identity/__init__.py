"""Identity stitching: ids that are not a customer key (an ``anonymousId``, an alias's
``previousId``, optionally an email) linked to the person whose records they become
(../shared/audiences.md, "Identity"). ``config.py`` holds the ``identity:`` section,
``resolver.py`` the stage in front of the engine that keeps the links and the records
of ids not linked yet."""
