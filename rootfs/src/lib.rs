//! sandlot templates
