-- Modalities in Study (0008,0061) kept on the study row (issue #15's C-FIND targets): a study
-- list asks for it on every match, and computing it per match from `series` cost a third of a
-- 1,300-match query. A trigger keeps it equal to the distinct non-empty modalities of the
-- study's series, whoever writes `series` (the server, `strata locator migrate`, tools that
-- write SQL directly). Order is not significant (PS3.4 C.6.1.1.4).
ALTER TABLE studies ADD COLUMN modalities_in_study TEXT COLLATE "C" NOT NULL DEFAULT '';

UPDATE studies SET modalities_in_study = COALESCE(
    (SELECT string_agg(DISTINCT modality, ',') FROM series
      WHERE series.study_fk = studies.id AND modality <> ''), '');

CREATE FUNCTION series_modalities() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE studies SET modalities_in_study = COALESCE(
        (SELECT string_agg(DISTINCT modality, ',') FROM series
          WHERE series.study_fk = studies.id AND modality <> ''), '')
     WHERE id IN (
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.study_fk END,
        CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.study_fk END);
    RETURN NULL;
END
$$;
CREATE TRIGGER series_modalities AFTER INSERT OR DELETE OR UPDATE OF modality, study_fk
    ON series FOR EACH ROW EXECUTE FUNCTION series_modalities();
