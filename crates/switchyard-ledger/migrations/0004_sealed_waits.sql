-- Issue 12: a waiting command is kept whole only sealed (encrypted with the record key), for
-- dead-lettering it should the wait fail; `record` holds a redacted copy anyone may read.
ALTER TABLE waits ADD COLUMN sealed TEXT;
