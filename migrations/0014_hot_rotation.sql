-- Room on each page for the one update every refresh token and authorization code gets (its
-- rotation, its use): the new row version then stays on its page (a HOT update) and no index
-- gets a new entry for it. At the default fillfactor (100) the page of a token was full by the
-- time it was rotated, and each rotation also wrote one entry in each of the table's indexes.
-- Applies to pages written from now on.
ALTER TABLE refresh_tokens SET (fillfactor = 70);
ALTER TABLE authorization_codes SET (fillfactor = 70);
