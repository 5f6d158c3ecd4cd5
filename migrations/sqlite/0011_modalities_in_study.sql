-- Modalities in Study (0008,0061) kept on the study row (issue #15's C-FIND targets): a study
-- list asks for it on every match, and computing it per match from `series` cost a third of a
-- 1,300-match query. Triggers keep it equal to the distinct non-empty modalities of the
-- study's series, whoever writes `series` (the server, `strata locator migrate`, tools that
-- write SQL directly). Order is not significant (PS3.4 C.6.1.1.4).
ALTER TABLE studies ADD COLUMN modalities_in_study TEXT NOT NULL DEFAULT '';

UPDATE studies SET modalities_in_study = COALESCE(
    (SELECT GROUP_CONCAT(DISTINCT modality) FROM series
      WHERE series.study_fk = studies.id AND modality <> ''), '');

CREATE TRIGGER series_modalities_insert AFTER INSERT ON series BEGIN
    UPDATE studies SET modalities_in_study = COALESCE(
        (SELECT GROUP_CONCAT(DISTINCT modality) FROM series
          WHERE series.study_fk = NEW.study_fk AND modality <> ''), '')
     WHERE id = NEW.study_fk;
END;

CREATE TRIGGER series_modalities_update AFTER UPDATE OF modality, study_fk ON series BEGIN
    UPDATE studies SET modalities_in_study = COALESCE(
        (SELECT GROUP_CONCAT(DISTINCT modality) FROM series
          WHERE series.study_fk = studies.id AND modality <> ''), '')
     WHERE id IN (OLD.study_fk, NEW.study_fk);
END;

CREATE TRIGGER series_modalities_delete AFTER DELETE ON series BEGIN
    UPDATE studies SET modalities_in_study = COALESCE(
        (SELECT GROUP_CONCAT(DISTINCT modality) FROM series
          WHERE series.study_fk = OLD.study_fk AND modality <> ''), '')
     WHERE id = OLD.study_fk;
END;
