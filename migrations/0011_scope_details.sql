-- What the consent page says about a resource's scope beyond its one-line description (kept in
-- resources.scopes): a longer text, the tools the scope unlocks, and whether the person may
-- leave it unchecked (`required`: the scope is granted with the rest or not at all).
CREATE TABLE resource_scopes (
    resource_id uuid    NOT NULL REFERENCES resources ON DELETE CASCADE,
    scope       text    NOT NULL CHECK (length(scope) BETWEEN 1 AND 128),
    details     text    CHECK (length(details) <= 2000),
    tools       text[]  NOT NULL DEFAULT '{}' CHECK (cardinality(tools) <= 100),
    required    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (resource_id, scope)
);
